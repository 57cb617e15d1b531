//! Shared state of the Redis limiter's health: is Redis answering, and if
//! not, which caller probes it next.
//!
//! Two atomics, no lock. While Redis is down every check but one per probe
//! interval skips the round trip and applies the failure policy at once; the
//! one that wins the compare-exchange on `next_probe_at` asks Redis, and its
//! answer marks the limiter up again (or pushes the next probe out).
//!
//! The ordering that matters: a failure stores the next probe instant
//! *before* it publishes `down` (release), and a reader loads `down` before
//! `next_probe_at` (acquire), so a reader that sees "down" also sees the
//! probe instant of that failure (or a later one), never a stale one that
//! would let every caller probe at once. The loom models below check it,
//! with the reservation's lock protocol beside it.

use crate::sync::atomic::{AtomicU64, Ordering};

/// Whether Redis answers, and when the next probe is due while it does not.
#[derive(Debug)]
pub(crate) struct Health {
    /// 0 while Redis answers; else the `RedisErrorKind` code of the failure
    /// that made the limiter stop asking.
    down: AtomicU64,
    /// While down: the earliest instant (ns since the limiter's origin) of
    /// the next probe.
    next_probe_at: AtomicU64,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            down: AtomicU64::new(0),
            next_probe_at: AtomicU64::new(0),
        }
    }

    /// Whether Redis answered the last time it was asked.
    pub(crate) fn is_up(&self) -> bool {
        self.down.load(Ordering::Relaxed) == 0
    }

    /// `None` when this call should ask Redis: it is up, or it is down and
    /// this caller won the probe due at `now` (the next one is then due at
    /// `now + interval`). Otherwise the code of the failure in force.
    pub(crate) fn skip(&self, now: u64, interval: u64) -> Option<u8> {
        let (down, at) = self.state();
        if down == 0 {
            return None;
        }
        if now >= at
            && self
                .next_probe_at
                .compare_exchange(
                    at,
                    now.saturating_add(interval),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return None;
        }
        Some(down as u8)
    }

    /// The failure code in force (0: up) and, while down, the next probe
    /// instant, read in the order that makes them consistent.
    fn state(&self) -> (u64, u64) {
        let down = self.down.load(Ordering::Acquire);
        if down == 0 {
            return (0, 0);
        }
        (down, self.next_probe_at.load(Ordering::Acquire))
    }

    /// Redis answered. `true` when it had been down (a transition).
    pub(crate) fn answered(&self) -> bool {
        self.down.swap(0, Ordering::AcqRel) != 0
    }

    /// Redis could not be reached (`code` is never 0): stop asking until
    /// `next_probe_at`. `true` when it had been up (a transition).
    pub(crate) fn unreachable(&self, code: u8, next_probe_at: u64) -> bool {
        debug_assert_ne!(code, 0, "code 0 means up");
        self.next_probe_at.store(next_probe_at, Ordering::Release);
        self.down.swap(u64::from(code.max(1)), Ordering::AcqRel) == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Health;

    #[test]
    fn up_never_skips() {
        let h = Health::new();
        assert!(h.is_up());
        assert_eq!(h.skip(0, 10), None);
        assert_eq!(h.skip(u64::MAX, 10), None);
    }

    #[test]
    fn down_skips_until_the_probe_then_one_caller_probes() {
        let h = Health::new();
        assert!(h.unreachable(3, 100));
        assert!(!h.is_up());
        assert!(!h.unreachable(3, 100), "already down: no transition");
        assert_eq!(h.skip(99, 50), Some(3));
        assert_eq!(h.skip(100, 50), None, "the probe is due at 100");
        assert_eq!(h.skip(100, 50), Some(3), "one probe per interval");
        assert_eq!(h.skip(149, 50), Some(3));
        assert_eq!(h.skip(150, 50), None);
        assert!(h.answered());
        assert!(!h.answered(), "already up: no transition");
        assert_eq!(h.skip(151, 50), None);
    }

    #[test]
    fn the_interval_saturates() {
        let h = Health::new();
        h.unreachable(1, 0);
        assert_eq!(h.skip(u64::MAX - 1, 10), None);
        assert_eq!(h.skip(u64::MAX - 1, 10), Some(1));
    }
}

/// Loom models of the limiter's shared state: the health flag's probe
/// election, and the local reservation's lock protocol as `check` runs it
/// (spend under the lock, round trip without it, settle or give back under
/// it again).
#[cfg(all(test, loom))]
mod loom_models {
    use loom::thread;

    use super::super::core::{Reservation, Spend};
    use super::Health;
    use crate::sync::{Arc, Mutex};

    /// While Redis is down, callers racing at the same instant elect exactly
    /// one prober per interval.
    #[test]
    fn one_probe_per_interval() {
        loom::model(|| {
            let h = Arc::new(Health::new());
            h.unreachable(2, 10);
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let h = h.clone();
                    thread::spawn(move || h.skip(15, 100).is_none())
                })
                .collect();
            let probes = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&p| p)
                .count();
            assert_eq!(probes, 1);
            assert_eq!(h.skip(114, 100), Some(2));
            assert_eq!(h.skip(115, 100), None);
        });
    }

    /// A caller that sees the failure also sees its probe instant: it never
    /// probes early (which would let every caller probe a dead Redis).
    #[test]
    fn a_failure_publishes_its_probe_instant() {
        loom::model(|| {
            let h = Arc::new(Health::new());
            let failer = {
                let h = h.clone();
                thread::spawn(move || {
                    h.unreachable(4, 1_000);
                })
            };
            // Whoever sees "down" sees the probe instant that came with it.
            let (down, at) = h.state();
            failer.join().unwrap();
            assert!(down == 0 || (down == 4 && at == 1_000), "{down} {at}");
            assert_eq!(h.skip(500, 100), Some(4), "no probe before it is due");
        });
    }

    /// A success and a failure racing leave a consistent state: down with a
    /// future probe instant, or up.
    #[test]
    fn answer_and_failure_race() {
        loom::model(|| {
            let h = Arc::new(Health::new());
            h.unreachable(1, 0);
            let ok = {
                let h = h.clone();
                thread::spawn(move || h.answered())
            };
            let failed = h.unreachable(3, 50);
            let recovered = ok.join().unwrap();
            // Exactly one of the two saw the other's state as a transition
            // or the answer came first and the failure re-opened it.
            if h.is_up() {
                assert!(recovered);
                assert_eq!(h.skip(0, 10), None);
            } else {
                assert_eq!(h.skip(49, 10), Some(3));
                assert_eq!(h.skip(50, 10), None);
            }
            let _ = failed;
        });
    }

    /// The reservation under concurrent checks: tokens are neither created
    /// nor lost. Every token Redis granted is admitted, held, or counted as
    /// wasted, whatever the interleaving of spends, round trips and settles.
    #[test]
    fn reservation_conserves_tokens() {
        loom::model(|| {
            // batch 3: a round trip asks for up to 3 tokens, keeps up to 2.
            let res = Arc::new(Mutex::new(Reservation::new(3, 1_000)));
            // Redis: tokens left in the bucket (the script is atomic).
            let redis = Arc::new(Mutex::new(4u32));
            let check = |res: Arc<Mutex<Reservation>>, redis: Arc<Mutex<u32>>, refuse: bool| {
                let spend = res.lock().spend(1, 0);
                let borrowed = match spend {
                    Spend::Local => return (1u32, 0u32),
                    Spend::Remote { borrowed } => borrowed,
                };
                let ask = res.lock().ask(1, borrowed, 1, 3);
                let granted = {
                    let mut left = redis.lock();
                    if refuse || *left < ask.need {
                        0
                    } else {
                        let g = ask.want.min(*left);
                        *left -= g;
                        g
                    }
                };
                if granted > 0 {
                    res.lock().settle(1, borrowed, granted, 0);
                    (1, granted)
                } else {
                    res.lock().give_back(borrowed, 0);
                    (0, 0)
                }
            };
            let threads: Vec<_> = [false, true]
                .into_iter()
                .map(|refuse| {
                    let (res, redis) = (res.clone(), redis.clone());
                    thread::spawn(move || check(res, redis, refuse))
                })
                .collect();
            let (mut admitted, mut granted) = check(res.clone(), redis.clone(), false);
            for t in threads {
                let (a, g) = t.join().unwrap();
                admitted += a;
                granted += g;
            }
            let r = res.lock();
            assert_eq!(
                u64::from(admitted) + u64::from(r.held()) + r.wasted(),
                u64::from(granted),
                "every granted token is admitted, held or wasted"
            );
            assert!(r.held() <= r.cap());
            assert_eq!(*redis.lock() + granted, 4, "Redis lost no tokens");
        });
    }
}
