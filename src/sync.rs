//! The one place where `src/` gets its synchronisation primitives.
//!
//! Under `--cfg loom` everything here comes from [loom] so that the models in
//! `tests/loom_*.rs` check the very code that ships; otherwise from `std`
//! (atomics, `Arc`, threads) and `parking_lot` (locks). The std side keeps
//! loom's API shape, so call sites compile unchanged under both.
//!
//! The cfg is the plain `loom` (not `all(test, loom)`): loom is a
//! `[target.'cfg(loom)'.dependencies]` entry, so the integration tests in
//! `tests/loom_*.rs` drive the *public* API under the model checker.
//! Nothing else in `src/` may import `std::sync`, `std::thread` or
//! `parking_lot` directly.
//!
//! [loom]: https://docs.rs/loom

#![allow(unreachable_pub, dead_code, unused_imports)]

/// `std::sync::Arc` on both sides, for the places loom's `Arc` cannot
/// serve: *values* handed out to users (a batch error shared by every key
/// of a failed batch: the public API must not change type under
/// `--cfg loom`, and loom's `Arc` has no `Display` forwarding or unsized
/// coercion), type-erased callbacks shared between layers (a pipeline's
/// classifier: `Arc<dyn Fn ..>` needs unsized coercion), and hand-made
/// wakers (`std::task::Wake` needs std's `Arc`).
/// Neither is a synchronisation point for loom to explore; what such an
/// `Arc` points to still uses the facade's atomics and locks.
pub(crate) use std::sync::Arc as StdArc;

/// `std::sync::OnceLock` for the `metrics` feature's export handles, set
/// once at build time and only read after: not a synchronisation point of
/// any loom model (the feature's code is not built under loom).
#[cfg(all(feature = "metrics", not(loom)))]
pub(crate) use std::sync::OnceLock as StdOnceLock;
#[cfg(all(feature = "metrics", not(loom)))]
pub(crate) use std::sync::Weak as StdWeak;

/// A value on cache lines of its own, for a word every thread writes on a
/// hot path (a limiter's bucket, a counter stripe): 128 bytes, because
/// adjacent-line prefetch on x86 pairs 64-byte lines, so two values 64
/// bytes apart still contend. The same on both sides of the facade.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A count that every thread adds to on a hot path and that is read rarely
/// (a limiter's admitted and refused totals, a breaker's refusals): each
/// thread adds to a slot of its own, and [`sum`](Self::sum) adds the slots.
///
/// Exact, and no locked instruction on `add`: a slot has one writer at a
/// time, so adding is a plain load and store (a `lock xadd` drains the
/// store buffer, ~20 cycles even uncontended, and on a shared line it
/// also moves the line between cores). The slots are the `thread_local`
/// crate's (a slot per live thread, a thread's id and slot reused by a
/// later thread only after the first exited, which orders the two
/// threads' writes: no add is lost), each on cache lines of its own.
/// Memory: the crate keeps slots in buckets by the thread's process-wide
/// id (ids 0, 1–2, 3–6, 7–14, …; a bucket of 2^k slots of 256 bytes for
/// ids 2^k − 1 to 2^(k+1) − 2) and allocates a bucket when a thread of it
/// first adds, kept until the counter is dropped. Threads that start
/// early (a runtime's workers) have small ids: 16 workers take at most
/// 8 KiB a counter. A thread with a large id pays its whole bucket (id
/// 300: 64 KiB), which is why the counter is for hot paths of a few
/// long-lived values, not for one per key.
///
/// An add from a thread-local destructor that runs after the crate's own
/// per-thread guard is gone (at thread exit) makes the crate panic; the
/// first add on a thread catches that and counts in a shared `spill`
/// word instead, so the count stays exact. With `panic = "abort"` that
/// corner aborts, and with unwinding the panic hook still reports it.
///
/// Under loom a single atomic added to with `fetch_add` (loom does not
/// model the `thread_local` crate); a model of a counter's user checks
/// that user's counts, not the slots.
#[derive(Debug, Default)]
pub(crate) struct ThreadCounter {
    #[cfg(not(loom))]
    slots: thread_local::ThreadLocal<CachePadded<atomic::AtomicU64>>,
    /// Adds made where the thread could not get a slot: from a
    /// thread-local destructor that runs after the `thread_local` crate's
    /// own per-thread guard is gone, where `get_or` panics.
    #[cfg(not(loom))]
    spill: atomic::AtomicU64,
    #[cfg(loom)]
    total: atomic::AtomicU64,
}

impl ThreadCounter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `v` (wrapping) to the calling thread's slot.
    #[inline]
    pub(crate) fn add(&self, v: u64) {
        use atomic::Ordering::Relaxed;
        #[cfg(not(loom))]
        match self.slots.get() {
            // Only this thread writes this slot (see the type's docs):
            // relaxed, because `sum` reads each slot on its own anyway.
            Some(slot) => slot.store(slot.load(Relaxed).wrapping_add(v), Relaxed),
            None => self.add_first(v),
        }
        #[cfg(loom)]
        self.total.fetch_add(v, Relaxed);
    }

    /// The first add on this thread: makes its slot. In a thread-local
    /// destructor that runs after the `thread_local` crate's per-thread
    /// guard was dropped, making a slot panics (the crate cannot register
    /// the thread's id any more); that add goes to `spill` instead, so no
    /// count is lost and no caller panics at thread exit.
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn add_first(&self, v: u64) {
        use atomic::Ordering::Relaxed;
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.slots.get_or(CachePadded::default)
        }));
        match made {
            Ok(slot) => slot.store(slot.load(Relaxed).wrapping_add(v), Relaxed),
            Err(_) => {
                self.spill.fetch_add(v, Relaxed);
            }
        }
    }

    /// The total of every `add` that happened before (a snapshot, not
    /// atomic across threads' slots).
    pub(crate) fn sum(&self) -> u64 {
        use atomic::Ordering::Relaxed;
        #[cfg(not(loom))]
        return self.slots.iter().fold(self.spill.load(Relaxed), |s, x| {
            s.wrapping_add(x.load(Relaxed))
        });
        #[cfg(loom)]
        return self.total.load(Relaxed);
    }
}

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }

    pub(crate) mod thread {
        pub(crate) use std::thread::{Builder, JoinHandle, current, panicking, park, yield_now};
    }

    /// A mutex whose `lock` returns the guard directly (no poisoning), on both sides.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }

        #[inline]
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }

    /// A reader-writer lock whose `read`/`write` return the guards directly
    /// (no poisoning), on both sides.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(parking_lot::RwLock<T>);

    pub(crate) type RwLockReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
    pub(crate) type RwLockWriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;

    impl<T> RwLock<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> Self {
            Self(parking_lot::RwLock::new(value))
        }

        #[inline]
        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }

        #[inline]
        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }

    /// A condition variable with std/loom's by-value `wait` shape.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }

    pub(crate) mod thread {
        pub(crate) use loom::thread::{Builder, JoinHandle, current, park, yield_now};
        pub(crate) use std::thread::panicking;
    }

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    pub(crate) type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    pub(crate) type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use imp::*;

mod wait_list;
pub(crate) use wait_list::{WaitList, Waiter, Wakers};

/// Runs a future to completion on the current thread, parking between polls.
///
/// The one bridge from plain threads into the crate's async waiting (a
/// `CpuPool` worker sending into a channel, `send_blocking`, `recv_blocking`).
/// Under loom this is `loom::future::block_on`.
#[cfg(not(loom))]
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match block_on_until(&mut fut, None) {
        Some(out) => out,
        None => unreachable!("no deadline: it returns only when ready"),
    }
}

/// Polls `fut` on the current thread, parking between polls, until it is
/// ready or `deadline` passes (`None`: never). `None` on timeout; the future
/// is left for the caller to cancel. The blocking-with-timeout bridge
/// (`send_blocking_timeout`, `recv_blocking_timeout`); not under loom,
/// which has no timed park.
#[cfg(not(loom))]
pub(crate) fn block_on_until<F: std::future::Future + Unpin>(
    fut: &mut F,
    deadline: Option<std::time::Instant>,
) -> Option<F::Output> {
    use std::task::{Context, Poll, Wake, Waker};

    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = std::pin::Pin::new(&mut *fut).poll(&mut cx) {
            return Some(out);
        }
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = std::time::Instant::now();
                if now >= d {
                    return None;
                }
                std::thread::park_timeout(d - now);
            }
        }
    }
}

/// See the non-loom version.
#[cfg(loom)]
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    loom::future::block_on(fut)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Every add from every thread is counted, also across threads that
    /// exit and hand their slot to a later thread.
    #[test]
    fn thread_counter_sums_every_add_from_every_thread() {
        let c = ThreadCounter::new();
        for round in 0..3u64 {
            std::thread::scope(|s| {
                for t in 0..8u64 {
                    let c = &c;
                    s.spawn(move || {
                        for _ in 0..1000 {
                            c.add(t + 1 + round);
                        }
                    });
                }
            });
        }
        let per_round = |r: u64| 1000 * (1..=8).map(|t| t + r).sum::<u64>();
        assert_eq!(c.sum(), per_round(0) + per_round(1) + per_round(2));
        c.add(u64::MAX); // wraps, as a sum of u64s does
        assert_eq!(c.sum(), per_round(0) + per_round(1) + per_round(2) - 1);
        assert_eq!(std::mem::align_of::<CachePadded<atomic::AtomicU64>>(), 128);
    }

    /// An add from a thread-local destructor that runs after the
    /// `thread_local` crate's guard (registered later, so dropped earlier)
    /// neither panics nor is lost.
    #[test]
    fn thread_counter_add_at_thread_exit_is_counted() {
        use std::sync::Arc;
        struct AddOnDrop(std::cell::RefCell<Option<Arc<ThreadCounter>>>);
        impl Drop for AddOnDrop {
            fn drop(&mut self) {
                if let Some(c) = self.0.borrow_mut().take() {
                    c.add(5);
                }
            }
        }
        thread_local! {
            static LATE: AddOnDrop = const { AddOnDrop(std::cell::RefCell::new(None)) };
        }
        let c = Arc::new(ThreadCounter::new());
        let c2 = c.clone();
        std::thread::spawn(move || {
            // Registered first, so its destructor runs after the crate's
            // guard, which the add below registers.
            LATE.with(|l| *l.0.borrow_mut() = Some(c2.clone()));
            c2.add(1);
        })
        .join()
        .unwrap();
        assert_eq!(c.sum(), 6);
        // The late add took the spill path (were the destructors ever run
        // in another order, this says so instead of passing vacuously).
        assert_eq!(c.spill.load(atomic::Ordering::Relaxed), 5);
    }
}
