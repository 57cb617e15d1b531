//! The pure part of the Redis limiter: what the script is asked, what its
//! reply means, the rule the script runs (in Rust, on the crate's GCRA), the
//! local reservation's accounting and the fallback share.
//!
//! No I/O, no clock reads, no locks: time comes in as an argument. The
//! in-memory store, the unit tests below and `tests/prop_redis.rs` drive it;
//! `tests/redis.rs` checks the Lua script against [`step`] on a real Redis.

use crate::rate::gcra::Gcra;

/// The Lua script run by `EVALSHA`/`EVAL` (see the file for its contract).
pub(crate) const SCRIPT: &str = include_str!("gcra.lua");

/// Largest tolerance `tau = burst * T` (ns) the Redis limiter accepts: Lua
/// numbers are doubles, exact up to 2^53, and the script adds up to two
/// tolerances (about 52 days).
pub(crate) const MAX_REDIS_TOLERANCE: u64 = 1 << 52;

const BILLION: u64 = 1_000_000_000;

/// What one script call asks: take at least `need` and at most `want`
/// tokens from a bucket with emission interval `t` and tolerance `tau`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) t: u64,
    pub(crate) tau: u64,
    pub(crate) need: u32,
    pub(crate) want: u32,
}

impl Ask {
    /// The burst `tau / T`.
    pub(crate) fn burst(&self) -> u32 {
        (self.tau / self.t) as u32
    }

    /// `ARGV[1..=4]` of the script.
    pub(crate) fn argv(&self) -> [u64; 4] {
        [self.t, self.tau, u64::from(self.need), u64::from(self.want)]
    }
}

/// A Unix time as the script sees it: seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct UnixTime {
    pub(crate) secs: u64,
    pub(crate) nanos: u32,
}

impl UnixTime {
    pub(crate) fn from_nanos(ns: u128) -> Self {
        Self {
            secs: (ns / u128::from(BILLION)) as u64,
            nanos: (ns % u128::from(BILLION)) as u32,
        }
    }

    pub(crate) fn as_nanos(self) -> u128 {
        u128::from(self.secs) * u128::from(BILLION) + u128::from(self.nanos)
    }

    /// The stored form, `"<secs>:<nanos>"` with nine digits of nanoseconds.
    #[cfg(test)]
    pub(crate) fn to_stored(self) -> String {
        format!("{}:{:09}", self.secs, self.nanos)
    }

    /// Parses the stored form; `None` for anything else.
    #[cfg(test)]
    pub(crate) fn parse_stored(s: &str) -> Option<Self> {
        let (secs, nanos) = s.split_once(':')?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(secs) || !digits(nanos) {
            return None;
        }
        let secs: u64 = secs.parse().ok()?;
        let nanos: u64 = nanos.parse().ok()?;
        Some(Self::from_nanos(
            u128::from(secs) * u128::from(BILLION) + u128::from(nanos),
        ))
    }
}

/// A decoded script reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// 0 when refused, else `need..=want`.
    pub(crate) granted: u32,
    /// When refused: ns from the server's now until `need` tokens are there.
    pub(crate) wait_ns: u64,
    /// Whole tokens left after the call.
    pub(crate) left: u32,
    /// The server's time at the call.
    pub(crate) now: UnixTime,
}

impl Reply {
    /// The raw reply the script returns for this outcome.
    pub(crate) fn encode(&self) -> [i64; 5] {
        [
            i64::from(self.granted),
            self.wait_ns as i64,
            i64::from(self.left),
            self.now.secs as i64,
            i64::from(self.now.nanos),
        ]
    }
}

/// A reply that does not fit the script's contract (another script under
/// the same SHA, a proxy that mangles replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not five integers.
    Length(usize),
    /// A field out of its range.
    Field(&'static str, i64),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Length(n) => write!(f, "script reply has {n} elements, expected 5"),
            Self::Field(name, v) => write!(f, "script reply field {name} out of range: {v}"),
        }
    }
}

/// Decodes a raw reply to `ask`, checking every field against the contract.
pub(crate) fn decode(raw: &[i64], ask: &Ask) -> Result<Reply, DecodeError> {
    let &[granted, wait, left, secs, nanos] = raw else {
        return Err(DecodeError::Length(raw.len()));
    };
    let burst = i64::from(ask.burst());
    let granted_ok = granted == 0 || (i64::from(ask.need)..=i64::from(ask.want)).contains(&granted);
    if !granted_ok {
        return Err(DecodeError::Field("granted", granted));
    }
    // Refused: the wait is positive and at most debt + need * T - tau,
    // with the debt itself at most two tolerances.
    let wait_ok = if granted == 0 {
        wait > 0 && wait as u64 <= 2 * MAX_REDIS_TOLERANCE
    } else {
        wait == 0
    };
    if !wait_ok {
        return Err(DecodeError::Field("wait_ns", wait));
    }
    let left_ok = (0..=burst).contains(&left) && (granted > 0 || left < i64::from(ask.need));
    if !left_ok {
        return Err(DecodeError::Field("left", left));
    }
    if secs < 0 {
        return Err(DecodeError::Field("now_seconds", secs));
    }
    if !(0..BILLION as i64).contains(&nanos) {
        return Err(DecodeError::Field("now_nanoseconds", nanos));
    }
    Ok(Reply {
        granted: granted as u32,
        wait_ns: wait as u64,
        left: left as u32,
        now: UnixTime {
            secs: secs as u64,
            nanos: nanos as u32,
        },
    })
}

/// Where the GCRA core is asked to stand "now": above any tolerance, far
/// below its saturation point.
const ORIGIN: u64 = 1 << 60;

/// The script's rule on one bucket: the stored TAT (`None`: no key, a full
/// bucket) at server time `now`, asked `ask`. Returns the TAT to store
/// (`None`: unchanged) and the reply.
///
/// It runs the crate's GCRA ([`Gcra`]) on the debt `max(0, tat - now)`,
/// placed at a fixed origin, which is exactly what the Lua script computes
/// in doubles. `ask` must be valid: `1 <= need <= want <= burst`,
/// `tau = burst * T <= MAX_REDIS_TOLERANCE`; debts above `2^53` ns are
/// clamped (the script would see them only in a key it did not write).
pub(crate) fn step(
    stored: Option<UnixTime>,
    now: UnixTime,
    ask: &Ask,
) -> (Option<UnixTime>, Reply) {
    let g = Gcra {
        t: ask.t,
        burst: ask.burst(),
    };
    let debt = stored
        .map(|tat| tat.as_nanos().saturating_sub(now.as_nanos()))
        .unwrap_or(0)
        .min(1 << 53) as u64;
    // A full bucket is any TAT at or before now.
    let tat = if debt == 0 { 0 } else { ORIGIN + debt };
    let (left, _) = g.available(tat, ORIGIN);
    if left < ask.need {
        let wait = g.ready_at(tat, ORIGIN, u64::from(ask.need)) - ORIGIN;
        return (
            None,
            Reply {
                granted: 0,
                wait_ns: wait,
                left,
                now,
            },
        );
    }
    let grant = ask.want.min(left);
    match g.take(tat, ORIGIN, grant) {
        Ok(new_tat) => {
            let new_debt = new_tat - ORIGIN;
            (
                Some(UnixTime::from_nanos(now.as_nanos() + u128::from(new_debt))),
                Reply {
                    granted: grant,
                    wait_ns: 0,
                    left: left - grant,
                    now,
                },
            )
        }
        // `grant <= left` whole tokens are there, so take cannot refuse;
        // answer as a refusal of `need` should the two ever disagree.
        Err(_) => (
            None,
            Reply {
                granted: 0,
                wait_ns: g.ready_at(tat, ORIGIN, u64::from(ask.need)).max(ORIGIN + 1) - ORIGIN,
                left,
                now,
            },
        ),
    }
}

/// The local reservation: tokens taken from Redis ahead of use.
///
/// At most `batch - 1` tokens are held at any time (a round trip takes up
/// to `batch`, one of which is the caller's), so a fleet of `R` replicas
/// holds at most `R * (batch - 1)` tokens that Redis counted as spent but
/// nobody used yet: that is the most the fleet can admit above the quota in
/// any window. Tokens held longer than `max_age` are dropped (`wasted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservation {
    held: u32,
    /// On the limiter's clock, ns since its origin.
    expires_at: u64,
    batch: u32,
    max_age_ns: u64,
    wasted: u64,
}

/// What the reservation says about a request for `n` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Served from the held tokens.
    Local,
    /// Go to Redis; `borrowed` held tokens were taken out to count towards
    /// the request (give them back with [`Reservation::give_back`] if the
    /// round trip does not succeed).
    Remote { borrowed: u32 },
}

impl Reservation {
    /// `batch >= 1` (1: no reservation), `max_age_ns >= 1`.
    pub(crate) fn new(batch: u32, max_age_ns: u64) -> Self {
        Self {
            held: 0,
            expires_at: 0,
            batch: batch.max(1),
            max_age_ns: max_age_ns.max(1),
            wasted: 0,
        }
    }

    /// The most tokens held at once.
    pub(crate) fn cap(&self) -> u32 {
        self.batch - 1
    }

    pub(crate) fn held(&self) -> u32 {
        self.held
    }

    /// Tokens dropped so far: expired, or over the cap.
    pub(crate) fn wasted(&self) -> u64 {
        self.wasted
    }

    fn expire(&mut self, now: u64) {
        if self.held > 0 && now >= self.expires_at {
            self.wasted += u64::from(self.held);
            self.held = 0;
        }
    }

    /// Serves `n >= 1` tokens from the held ones, or borrows all of them
    /// towards a round trip.
    pub(crate) fn spend(&mut self, n: u32, now: u64) -> Spend {
        self.expire(now);
        if self.held >= n {
            self.held -= n;
            return Spend::Local;
        }
        let borrowed = self.held;
        self.held = 0;
        Spend::Remote { borrowed }
    }

    /// What to ask Redis for `n` tokens (`1 <= n <= burst`) with `borrowed`
    /// held ones counting towards them.
    pub(crate) fn ask(&self, n: u32, borrowed: u32, t: u64, tau: u64) -> Ask {
        let burst = (tau / t) as u32;
        let need = n - borrowed.min(n - 1);
        let want = n
            .max(self.batch)
            .min(burst)
            .saturating_sub(n - need)
            .max(need);
        Ask { t, tau, need, want }
    }

    /// A round trip granted `granted` tokens for a request of `n` that had
    /// `borrowed` held ones towards it: keep the rest, up to the cap, for
    /// `max_age` from `now`.
    pub(crate) fn settle(&mut self, n: u32, borrowed: u32, granted: u32, now: u64) {
        let rest = (u64::from(borrowed) + u64::from(granted)).saturating_sub(u64::from(n));
        if rest == 0 {
            return;
        }
        self.expire(now);
        self.expires_at = now.saturating_add(self.max_age_ns);
        self.keep(rest);
    }

    /// The round trip failed or was refused: the borrowed tokens come back,
    /// unless they expired meanwhile.
    pub(crate) fn give_back(&mut self, borrowed: u32, now: u64) {
        if borrowed == 0 {
            return;
        }
        self.expire(now);
        if now >= self.expires_at {
            self.wasted += u64::from(borrowed);
            return;
        }
        self.keep(u64::from(borrowed));
    }

    fn keep(&mut self, tokens: u64) {
        let room = u64::from(self.cap().saturating_sub(self.held));
        let kept = tokens.min(room);
        self.wasted += tokens - kept;
        self.held += kept as u32;
    }
}

/// A replica's share of quota (`t`, `burst`) when `replicas` share it with
/// no coordination: the emission interval times `replicas`, the burst
/// divided by `replicas` (rounded down, at least 1). `None` when the
/// interval overflows.
///
/// The fleet then admits at most `replicas * burst_share <= max(burst,
/// replicas)` at once and `replicas / (T * replicas) = 1 / T` per ns after,
/// i.e. the quota (plus `replicas - burst` when there are more replicas than
/// burst).
pub(crate) fn share(t: u64, burst: u32, replicas: u32) -> Option<(u64, u32)> {
    let replicas = replicas.max(1);
    let t_share = t.checked_mul(u64::from(replicas))?;
    Some((t_share, (burst / replicas).max(1)))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ask(t: u64, burst: u32, need: u32, want: u32) -> Ask {
        Ask {
            t,
            tau: t * u64::from(burst),
            need,
            want,
        }
    }

    fn at(secs: u64, nanos: u32) -> UnixTime {
        UnixTime { secs, nanos }
    }

    #[test]
    fn full_bucket_then_refusal_with_exact_wait() {
        let a = ask(100, 3, 1, 1);
        let now = at(1_700_000_000, 999_999_950);
        let mut tat = None;
        for left in [2, 1, 0] {
            let (new, r) = step(tat, now, &a);
            assert_eq!((r.granted, r.wait_ns, r.left), (1, 0, left));
            tat = new;
        }
        assert_eq!(tat, Some(at(1_700_000_001, 250)));
        let (new, r) = step(tat, now, &a);
        assert_eq!((new, r.granted, r.wait_ns, r.left), (None, 0, 100, 0));
        // Admitted exactly 100 ns later, refused 1 ns before.
        assert_eq!(step(tat, at(1_700_000_001, 49), &a).1.granted, 0);
        assert_eq!(step(tat, at(1_700_000_001, 50), &a).1.granted, 1);
    }

    #[test]
    fn reservation_takes_what_is_there() {
        let a = ask(10, 5, 2, 5);
        let now = at(10, 0);
        let (tat, r) = step(Some(at(10, 25)), now, &a); // 2.5 tokens missing: 2 whole left
        assert_eq!((r.granted, r.left), (2, 0));
        assert_eq!(tat, Some(at(10, 45)));
        let (_, r) = step(Some(at(10, 35)), now, &a); // 1.5 left: refused, 2 need 5 ns more
        assert_eq!((r.granted, r.wait_ns, r.left), (0, 5, 1));
    }

    #[test]
    fn decode_accepts_what_step_returns_and_rejects_the_rest() {
        let a = ask(10, 5, 2, 4);
        let good = Reply {
            granted: 3,
            wait_ns: 0,
            left: 1,
            now: at(5, 7),
        };
        assert_eq!(decode(&good.encode(), &a), Ok(good));
        assert_eq!(decode(&[1, 2], &a), Err(DecodeError::Length(2)));
        assert_eq!(
            decode(&[1, 0, 0, 5, 7], &a),
            Err(DecodeError::Field("granted", 1))
        );
        assert_eq!(
            decode(&[5, 0, 0, 5, 7], &a),
            Err(DecodeError::Field("granted", 5))
        );
        assert_eq!(
            decode(&[0, 0, 0, 5, 7], &a),
            Err(DecodeError::Field("wait_ns", 0))
        );
        assert_eq!(
            decode(&[2, 3, 0, 5, 7], &a),
            Err(DecodeError::Field("wait_ns", 3))
        );
        assert_eq!(
            decode(&[0, 3, 2, 5, 7], &a),
            Err(DecodeError::Field("left", 2))
        );
        assert_eq!(
            decode(&[2, 0, 6, 5, 7], &a),
            Err(DecodeError::Field("left", 6))
        );
        assert_eq!(
            decode(&[2, 0, 0, -1, 7], &a),
            Err(DecodeError::Field("now_seconds", -1))
        );
        assert_eq!(
            decode(&[2, 0, 0, 1, 1_000_000_000], &a),
            Err(DecodeError::Field("now_nanoseconds", 1_000_000_000))
        );
    }

    #[test]
    fn stored_form_round_trips_and_rejects_junk() {
        let t = at(1_764_460_000, 5);
        assert_eq!(t.to_stored(), "1764460000:000000005");
        assert_eq!(UnixTime::parse_stored(&t.to_stored()), Some(t));
        for junk in ["", "1", "1:", ":1", "a:1", "1:2:3", "-1:0", "1: 2"] {
            assert_eq!(UnixTime::parse_stored(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn reservation_caps_expires_and_gives_back() {
        let mut r = Reservation::new(4, 100);
        assert_eq!(r.cap(), 3);
        assert_eq!(r.spend(1, 0), Spend::Remote { borrowed: 0 });
        let a = r.ask(1, 0, 10, 50);
        assert_eq!((a.need, a.want), (1, 4));
        r.settle(1, 0, 4, 0);
        assert_eq!(r.held(), 3);
        assert_eq!(r.spend(2, 50), Spend::Local);
        assert_eq!(r.spend(2, 60), Spend::Remote { borrowed: 1 });
        let a = r.ask(2, 1, 10, 50);
        assert_eq!((a.need, a.want), (1, 3));
        r.give_back(1, 60);
        assert_eq!(r.held(), 1);
        assert_eq!(r.spend(1, 100), Spend::Remote { borrowed: 0 }); // expired
        assert_eq!(r.wasted(), 1);
        // a deposit over the cap is wasted
        r.settle(1, 0, 4, 100);
        r.settle(1, 0, 4, 100);
        assert_eq!((r.held(), r.wasted()), (3, 4));
    }

    #[test]
    fn ask_never_exceeds_burst_nor_drops_below_one() {
        let r = Reservation::new(8, 1);
        let a = r.ask(3, 0, 10, 40); // burst 4
        assert_eq!((a.need, a.want), (3, 4));
        let a = r.ask(4, 5, 10, 40); // more borrowed than needed: still ask 1
        assert_eq!((a.need, a.want), (1, 1));
        let none = Reservation::new(1, 1);
        let a = none.ask(2, 0, 10, 40);
        assert_eq!((a.need, a.want), (2, 2));
    }

    #[test]
    fn share_divides_rate_and_burst() {
        assert_eq!(share(100, 10, 3), Some((300, 3)));
        assert_eq!(share(100, 2, 3), Some((300, 1)));
        assert_eq!(share(100, 2, 0), Some((100, 2)));
        assert_eq!(share(u64::MAX, 2, 2), None);
    }
}
