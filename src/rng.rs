//! The crate's one source of jitter: a small, seedable, deterministic PRNG.
//!
//! Jitter only needs to spread callers apart, not to be unpredictable, so a
//! SplitMix64 generator (one add and three multiply-xorshifts per draw) is
//! enough, costs no dependency, and makes every jittered schedule
//! reproducible from its seed in tests.

/// SplitMix64 (Steele, Lea, Flood 2014): every seed gives a full-period
/// sequence; consecutive seeds give unrelated sequences.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniformly drawn from `lo..=hi` (`hi < lo` is read as `lo`).
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = u128::from(hi - lo) + 1;
        // Multiply-shift (Lemire): no division, bias below 2^-64 * span.
        lo + ((u128::from(self.next_u64()) * span) >> 64) as u64
    }
}

/// 64 bits from the calling thread's own stream, whose **top** bits are
/// well mixed (the histograms' sampling decision, `crate::histogram`,
/// tests the top `k` for zero): a Weyl sequence (SplitMix64's increment)
/// through one xor-shift and multiply of SplitMix64's finaliser. Half
/// SplitMix64's instructions, as this sits on every sampled event's path;
/// no shared state, so threads draw without contention. Each thread's
/// stream starts from [`entropy_seed`] on its first draw. Under loom it
/// is always 0 (every drawn event is taken), so models stay deterministic.
#[inline]
pub(crate) fn thread_u64() -> u64 {
    #[cfg(not(loom))]
    {
        use std::cell::Cell;
        std::thread_local! {
            static STATE: Cell<u64> = const { Cell::new(0) };
        }
        STATE.with(|state| {
            let mut s = state.get();
            if s == 0 {
                // First draw on this thread (the sequence comes back to 0
                // only after 2^64 draws; reseeding then is harmless).
                s = entropy_seed();
            }
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(s);
            (s ^ (s >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        })
    }
    #[cfg(loom)]
    0
}

/// A seed that differs between processes and calls, for unseeded users.
pub(crate) fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5EED);
    h.finish()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    /// The top bits the histograms test are uniform enough: over 2^16
    /// draws each of the top 4-bit patterns comes up 2^12 times, within
    /// six standard deviations (binomial, 62).
    #[test]
    fn thread_draws_have_uniform_top_bits() {
        let mut seen = [0u32; 16];
        for _ in 0..1 << 16 {
            seen[(thread_u64() >> 60) as usize] += 1;
        }
        for (pattern, &n) in seen.iter().enumerate() {
            assert!(n.abs_diff(4096) <= 6 * 62, "pattern {pattern}: {n}");
        }
        // Zero in the top 6 bits: 1 in 64.
        let zeros = (0..1 << 16).filter(|_| thread_u64() >> 58 == 0).count();
        assert!(zeros.abs_diff(1024) <= 6 * 32, "{zeros}");
    }

    #[test]
    fn between_stays_in_bounds_and_reaches_both_ends() {
        let mut r = SplitMix64::new(42);
        let (mut lo_seen, mut hi_seen) = (false, false);
        for _ in 0..10_000 {
            let v = r.between(3, 6);
            assert!((3..=6).contains(&v));
            lo_seen |= v == 3;
            hi_seen |= v == 6;
        }
        assert!(lo_seen && hi_seen);
        assert_eq!(r.between(5, 5), 5);
        assert_eq!(r.between(9, 2), 9);
        let full = r.between(0, u64::MAX);
        let _ = full; // any value is in range; must not overflow
    }
}
