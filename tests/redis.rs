//! `RedisRateLimiter` on a real Redis (feature `redis`).
//!
//! Where the server comes from:
//!
//! * `FLOWGUARD_REDIS_URL` (`.ci/run` starts one and sets it): the shared
//!   server for the tests that do not break it; every test uses its own keys.
//! * Otherwise, and always for the fault tests (which kill, flush, or block
//!   the server), each test starts its own `redis-server` on a free port and
//!   stops it at the end.
//!
//! A test that can get no server prints `SKIPPED: <why>` and returns; with
//! `CI=true` it fails instead, so CI cannot pass without Redis.
//!
//! These tests run on the real clock (Redis's time is real), bounded: the
//! fleet test runs 5 s, every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowguard::clock::{Clock, ManualClock};
use flowguard::rate::{
    AcquireError, FailurePolicy, KeyedRedisRateLimiter, Quota, RateLimiter, RedisClient,
    RedisErrorKind, RedisRateLimiter, TryAcquireError,
};
use tokio::time::Instant;

const SCRIPT: &str = include_str!("../src/rate/redis/gcra.lua");

// ---------------------------------------------------------------- servers

/// Skips the calling test with a printed reason, or fails it under CI.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("Redis is required under CI=true but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A `redis-server` started by a test, on its own port, stopped on drop.
///
/// One at a time per process: a killed server's port is free again, and a
/// server started meanwhile by a parallel test could get it, so that the
/// first test's clients would reconnect to the wrong server.
struct OwnServer {
    child: Option<Child>,
    port: u16,
    _one_at_a_time: MutexGuard<'static, ()>,
}

static OWN_SERVERS: Mutex<()> = Mutex::new(());

impl OwnServer {
    fn start() -> Result<Self, String> {
        let guard = OWN_SERVERS.lock().unwrap_or_else(|e| e.into_inner());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut s = Self {
            child: None,
            port,
            _one_at_a_time: guard,
        };
        s.restart()?;
        Ok(s)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on the same port; waits until it answers.
    fn restart(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}); install it or set FLOWGUARD_REDIS_URL")
            })?;
        self.child = Some(child);
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        for _ in 0..200 {
            if let Ok(mut c) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("redis-server on port {} never answered", self.port))
    }

    /// SIGKILL: no goodbye to the clients.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shared server from `FLOWGUARD_REDIS_URL`, or one of the test's own.
struct Target {
    url: String,
    _own: Option<OwnServer>,
}

fn shared() -> Option<Target> {
    if let Ok(url) = std::env::var("FLOWGUARD_REDIS_URL") {
        let ok = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        return match ok {
            Ok(_) => Some(Target { url, _own: None }),
            Err(e) => {
                skip(&format!(
                    "FLOWGUARD_REDIS_URL={url} does not answer PING: {e}"
                ));
                None
            }
        };
    }
    own().map(|s| Target {
        url: s.url(),
        _own: Some(s),
    })
}

fn own() -> Option<OwnServer> {
    match OwnServer::start() {
        Ok(s) => Some(s),
        Err(e) => {
            skip(&e);
            None
        }
    }
}

/// A key no other test (or earlier run) uses.
fn key(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "flowguard-test:{name}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn client(url: &str) -> RedisClient {
    RedisClient::open(url).unwrap()
}

/// A plain connection, with no response timeout of its own (`DEBUG SLEEP`
/// must be allowed to take its time).
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Redis's own clock, ns since the Unix epoch.
async fn server_time_ns(url: &str) -> u128 {
    let (s, us): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut raw(url).await)
        .await
        .unwrap();
    u128::from(s) * 1_000_000_000 + u128::from(us) * 1000
}

/// A clock 10 s ahead of Tokio's: a replica whose clock is wrong.
#[derive(Debug, Clone, Copy)]
struct Skewed(Duration);

impl Clock for Skewed {
    fn now(&self) -> Instant {
        Instant::now() + self.0
    }
}

// ------------------------------------------------------- the script itself

/// Tiny deterministic generator (no test depends on luck).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The Lua script, fed a fixed server time, against the crate's local
/// `RateLimiter` (the GCRA of `src/rate/gcra.rs`) on a manual clock: same
/// admissions, same waits to the nanosecond, same tokens left, for single
/// requests and for reservations (take up to `want`, at least `need`).
#[tokio::test]
async fn script_matches_the_local_gcra_to_the_nanosecond() {
    let Some(target) = shared() else { return };
    let mut conn = raw(&target.url).await;
    let quotas = [
        Quota::per_second(3).unwrap(), // T = 333,333,334 ns
        Quota::with_period(7, Duration::from_micros(1)).unwrap(), // T = 143 ns
        Quota::per_minute(1000).unwrap().with_burst(50).unwrap(),
        Quota::with_period(1, Duration::from_secs(50 * 86_400)).unwrap(), // tau near 2^52 ns
    ];
    let mut rng = Lcg(7);
    for (qi, quota) in quotas.into_iter().enumerate() {
        let k = key(&format!("script-{qi}"));
        let clock = ManualClock::new();
        let local = RateLimiter::with_clock(quota, clock.clone());
        let start = clock.now();
        let t = quota.emission_interval().as_nanos() as u64;
        let burst = quota.burst();
        // A server epoch just before a second boundary, so carries happen.
        let epoch: u128 = 1_764_460_000 * 1_000_000_000 + 999_999_000;
        for step in 0..600 {
            let advance = match rng.below(4) {
                0 => 0,
                1 => rng.below(t.min(1 << 40) + 1),
                2 => rng.below(3) * t,
                _ => rng.below(t.saturating_mul(u64::from(burst)).min(1 << 40) + 1),
            };
            clock.advance(Duration::from_nanos(advance));
            let elapsed = (clock.now() - start).as_nanos();
            let now = epoch + elapsed;
            let need = 1 + rng.below(u64::from(burst)) as u32;
            let want = if rng.below(2) == 0 {
                need
            } else {
                need + rng.below(u64::from(burst - need) + 1) as u32
            };
            let reply: Vec<i64> = redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(&k)
                .arg(t)
                .arg(t * u64::from(burst))
                .arg(need)
                .arg(want)
                .arg((now / 1_000_000_000) as u64)
                .arg((now % 1_000_000_000) as u64)
                .query_async(&mut conn)
                .await
                .unwrap();
            let available = local.snapshot().available;
            let ctx = format!(
                "quota {qi} step {step}: need {need} want {want}, available {available}, reply {reply:?}"
            );
            assert_eq!(
                reply[3] as u128 * 1_000_000_000 + reply[4] as u128,
                now,
                "{ctx}"
            );
            if available >= need {
                let grant = want.min(available);
                assert_eq!(reply[0], i64::from(grant), "{ctx}");
                assert_eq!(reply[1], 0, "{ctx}");
                assert_eq!(reply[2], i64::from(available - grant), "{ctx}");
                local.try_acquire(grant).unwrap();
                // What the script stored: now + the local bucket's debt.
                let snap = local.snapshot();
                let debt = match snap.next_token_at {
                    None => 0,
                    Some(next) => {
                        u128::from(burst - snap.available - 1) * u128::from(t)
                            + (next - clock.now()).as_nanos()
                    }
                };
                let tat = now + debt;
                let expected = format!("{}:{:09}", tat / 1_000_000_000, tat % 1_000_000_000);
                let (stored, pttl): (Option<String>, i64) = redis::pipe()
                    .cmd("GET")
                    .arg(&k)
                    .cmd("PTTL")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                // The key expires (in Redis's real time) once the bucket
                // would be full: it may be gone already for a tiny debt.
                if let Some(stored) = stored {
                    assert_eq!(stored, expected, "{ctx}");
                    let debt_ms = (debt / 1_000_000) as i64;
                    assert!((0..=debt_ms + 1).contains(&pttl), "{ctx}: PTTL {pttl}");
                }
                // This test's "now" is not Redis's: keep the key for good.
                let () = redis::cmd("SET")
                    .arg(&k)
                    .arg(&expected)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            } else {
                let Err(TryAcquireError::NotUntil { retry_after }) = local.try_acquire(need) else {
                    panic!("{ctx}: the local limiter admitted");
                };
                assert_eq!(reply[0], 0, "{ctx}");
                assert_eq!(
                    reply[1] as u128,
                    (retry_after - clock.now()).as_nanos(),
                    "{ctx}"
                );
                assert_eq!(reply[2], i64::from(available), "{ctx}");
            }
        }
    }
}

/// A key holding something else is a typed `Server` error, never a panic
/// nor a silently reset bucket.
#[tokio::test]
async fn a_foreign_value_in_the_key_is_a_server_error() {
    let Some(target) = shared() else { return };
    let k = key("foreign");
    let mut conn = raw(&target.url).await;
    let () = redis::cmd("SET")
        .arg(&k)
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    let limiter = RedisRateLimiter::builder(
        client(&target.url),
        k.as_str(),
        Quota::per_second(5).unwrap(),
    )
    .call_timeout(Duration::from_secs(2))
    .build()
    .unwrap();
    assert_eq!(
        limiter.try_acquire(1).await,
        Err(TryAcquireError::Unavailable {
            cause: RedisErrorKind::Server
        })
    );
    let m = limiter.metrics();
    assert_eq!((m.redis_errors, m.fallbacks, m.refused), (1, 1, 1));
    assert!(m.redis_healthy, "an error reply is not an outage");
    let value: String = redis::cmd("GET")
        .arg(&k)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "hello");
}

// ------------------------------------------------------------ basic use

#[tokio::test]
async fn shared_bucket_retry_after_and_acquire() {
    let Some(target) = shared() else { return };
    let k = key("basic");
    let quota = Quota::per_second(20).unwrap().with_burst(3).unwrap();
    let build = || {
        RedisRateLimiter::builder(client(&target.url), k.as_str(), quota)
            .call_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    assert_eq!(a.ping().await.map(|_| ()), Ok(()));
    a.try_acquire(2).await.unwrap();
    b.try_acquire(1).await.unwrap();
    let before = Instant::now();
    let Err(TryAcquireError::NotUntil { retry_after }) = a.try_acquire(1).await else {
        panic!("the bucket is shared: a must be refused");
    };
    // At most one token (50 ms) away, and not in the past.
    assert!(retry_after > before && retry_after <= Instant::now() + Duration::from_millis(50));
    assert!(matches!(
        b.try_acquire(4).await,
        Err(TryAcquireError::InsufficientCapacity {
            requested: 4,
            burst: 3
        })
    ));
    tokio::time::sleep_until(retry_after).await;
    a.try_acquire(1).await.unwrap();
    b.acquire(1).await.unwrap();
    let m = a.metrics();
    assert_eq!(
        (m.calls, m.admitted, m.refused, m.redis_errors, m.fallbacks),
        (3, 2, 1, 0, 0)
    );
    assert_eq!(m.round_trips, 3);
    assert!(m.round_trip_mean().is_some() && m.round_trip_max >= m.round_trip_mean().unwrap());
    let m = b.metrics();
    assert_eq!((m.calls, m.admitted, m.refused), (3, 2, 1));
}

#[tokio::test]
async fn keyed_buckets_are_separate_and_expire_when_full() {
    let Some(target) = shared() else { return };
    let prefix = key("keyed");
    let limiter: KeyedRedisRateLimiter<str> = RedisRateLimiter::builder(
        client(&target.url),
        prefix.as_str(),
        Quota::per_second(50).unwrap().with_burst(2).unwrap(),
    )
    .call_timeout(Duration::from_secs(2))
    .build_keyed()
    .unwrap();
    limiter.try_acquire("alice", 2).await.unwrap();
    assert!(matches!(
        limiter.try_acquire("alice", 1).await,
        Err(TryAcquireError::NotUntil { .. })
    ));
    limiter.try_acquire("bob", 1).await.unwrap();
    let mut conn = raw(&target.url).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:alice"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=41).contains(&pttl),
        "alice's bucket refills in 40 ms, PTTL {pttl}"
    );
    // Full again after 40 ms: the key is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = redis::cmd("EXISTS")
            .arg(format!("{prefix}:alice"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the full bucket's key never expired"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    limiter.acquire("alice", 2).await.unwrap();
}

// --------------------------------------------------------------- fleet

const FLEET_QUOTA_PER_S: u32 = 200;
const FLEET_BURST: u32 = 20;
const FLEET_SECONDS: u64 = 5;

/// One replica: from `start` (Unix ns) for `FLEET_SECONDS`, take tokens one
/// at a time with `acquire` (until the next token is due after the end).
async fn replica<C: Clock>(limiter: RedisRateLimiter<C>, clock: C, start_unix_ns: u128) -> u64 {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let until_start = Duration::from_nanos(start_unix_ns.saturating_sub(now_unix) as u64);
    tokio::time::sleep(until_start).await;
    let end = clock.now() + Duration::from_secs(FLEET_SECONDS);
    let mut admitted = 0;
    loop {
        match limiter.acquire_deadline(1, end).await {
            Ok(()) => admitted += 1,
            Err(AcquireError::Timeout { .. }) => return admitted,
            Err(e) => panic!("replica failed: {e}"),
        }
    }
}

fn fleet_limiter<C: Clock>(url: &str, k: &str, clock: C, batch: u32) -> RedisRateLimiter<C> {
    let mut b = RedisRateLimiter::builder(
        client(url),
        k,
        Quota::per_second(FLEET_QUOTA_PER_S)
            .unwrap()
            .with_burst(FLEET_BURST)
            .unwrap(),
    )
    .call_timeout(Duration::from_secs(2));
    if batch > 1 {
        b = b.local_reservation(batch, Duration::from_millis(200));
    }
    b.clock(clock).build().unwrap()
}

/// Run by `fleet_of_eight_share_one_quota` in a separate OS process (the
/// test binary started again); does nothing when run on its own.
#[tokio::test]
#[ignore = "helper: the fleet test runs it in a child process"]
async fn fleet_child() {
    let (Ok(url), Ok(k), Ok(start)) = (
        std::env::var("FLEET_URL"),
        std::env::var("FLEET_KEY"),
        std::env::var("FLEET_START_UNIX_NS"),
    ) else {
        eprintln!("fleet_child: not started by the fleet test; nothing to do");
        return;
    };
    let limiter = fleet_limiter(&url, &k, flowguard::clock::TokioClock, 1);
    let n = replica(
        limiter,
        flowguard::clock::TokioClock,
        start.parse().unwrap(),
    )
    .await;
    println!("FLEET_ADMITTED {n}");
}

/// 8 replicas share 200/s (burst 20) for 5 s: 7 tasks in this process, each
/// with its own connection, one of them on a clock 10 s ahead, and one in a
/// separate OS process (this test binary, started again). Together
/// they admit no more than the quota over the whole window (measured on
/// Redis's clock), nearly all of it, and each gets a fair share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_eight_share_one_quota() {
    let Some(target) = shared() else { return };
    let k = key("fleet");
    let t0 = server_time_ns(&target.url).await;
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        + 500_000_000;
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "fleet_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLEET_URL", &target.url)
        .env("FLEET_KEY", &k)
        .env("FLEET_START_UNIX_NS", start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Each in-process replica on its own thread and runtime, as the child
    // process is: none is slowed by sharing a scheduler with the others.
    let threads: Vec<_> = (0..7)
        .map(|i| {
            let url = target.url.clone();
            let k = k.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if i == 6 {
                        // Ten seconds ahead: changes nothing, time comes from Redis.
                        let clock = Skewed(Duration::from_secs(10));
                        replica(fleet_limiter(&url, &k, clock, 1), clock, start).await
                    } else {
                        let clock = flowguard::clock::TokioClock;
                        replica(fleet_limiter(&url, &k, clock, 1), clock, start).await
                    }
                })
            })
        })
        .collect();
    let mut counts = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<u64>>()
    })
    .await
    .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let line = BufReader::new(&output.stdout[..])
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split("FLEET_ADMITTED ").nth(1).map(str::to_owned))
        .expect("the child process reported its count");
    counts.push(line.trim().parse().unwrap());
    let t1 = server_time_ns(&target.url).await;

    let total: u64 = counts.iter().sum();
    let t_ns = u128::from(
        Quota::per_second(FLEET_QUOTA_PER_S)
            .unwrap()
            .emission_interval()
            .as_nanos() as u64,
    );
    // GCRA's bound over [t0, t1]: the burst plus one token per T.
    let bound = u64::from(FLEET_BURST) + ((t1 - t0) / t_ns) as u64;
    let expected = u64::from(FLEET_BURST) + FLEET_SECONDS * u64::from(FLEET_QUOTA_PER_S);
    eprintln!("fleet: counts {counts:?}, total {total}, bound {bound}, 5 s worth {expected}");
    assert!(total <= bound, "admitted {total} > quota bound {bound}");
    assert!(
        total >= expected * 8 / 10,
        "admitted {total}, far below the quota's {expected}"
    );
    let mean = total as f64 / counts.len() as f64;
    for (i, &c) in counts.iter().enumerate() {
        assert!(
            (c as f64) >= mean * 0.5 && (c as f64) <= mean * 1.5,
            "replica {i} got {c}, mean {mean:.1}: not a fair share ({counts:?})"
        );
    }
}

/// With a reservation of 5 per round trip, 4 replicas (5 s) stay within the quota
/// plus the documented slack `replicas * (batch - 1)`, with fewer round
/// trips than admissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_with_reservation_stays_within_documented_slack() {
    let Some(target) = shared() else { return };
    let k = key("fleet-reservation");
    let (replicas, batch) = (4u64, 5u32);
    let t0 = server_time_ns(&target.url).await;
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        + 200_000_000;
    let limiters: Vec<_> = (0..replicas)
        .map(|_| fleet_limiter(&target.url, &k, flowguard::clock::TokioClock, batch))
        .collect();
    let tasks: Vec<_> = limiters
        .iter()
        .cloned()
        .map(|l| tokio::spawn(replica(l, flowguard::clock::TokioClock, start)))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let t1 = server_time_ns(&target.url).await;
    let t_ns = u128::from(
        Quota::per_second(FLEET_QUOTA_PER_S)
            .unwrap()
            .emission_interval()
            .as_nanos() as u64,
    );
    let slack = replicas * u64::from(batch - 1);
    let bound = u64::from(FLEET_BURST) + ((t1 - t0) / t_ns) as u64 + slack;
    let hits: u64 = limiters.iter().map(|l| l.metrics().reservation_hits).sum();
    let trips: u64 = limiters.iter().map(|l| l.metrics().round_trips).sum();
    eprintln!(
        "reservation fleet: total {total}, bound {bound} (slack {slack}), hits {hits}, round trips {trips}"
    );
    assert!(
        total <= bound,
        "admitted {total} > quota bound + slack {bound}"
    );
    assert!(hits > 0, "the reservation was never used");
}

// -------------------------------------------------------------- faults

fn policy_limiter(url: &str, k: &str, policy: FailurePolicy) -> RedisRateLimiter {
    RedisRateLimiter::builder(
        client(url),
        k,
        Quota::per_minute(60).unwrap().with_burst(10).unwrap(),
    )
    .failure_policy(policy)
    .call_timeout(Duration::from_millis(300))
    .probe_interval(Duration::from_millis(100))
    .build()
    .unwrap()
}

/// Nothing hangs: every call returns within a generous bound of the call
/// timeout, or the test fails here instead of stalling.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("a limiter call hung past 5 s")
}

/// Redis is killed (SIGKILL) and restarted mid-run: each policy does what it
/// promises while it is down, nothing hangs, and the limiters reconnect by
/// themselves (the restarted server lost the script too).
#[tokio::test]
async fn redis_killed_and_restarted_each_policy_keeps_its_promise() {
    let Some(mut server) = own() else { return };
    let url = server.url();
    let closed = policy_limiter(&url, "closed", FailurePolicy::FailClosed);
    let open = policy_limiter(&url, "open", FailurePolicy::FailOpen);
    let share = policy_limiter(&url, "share", FailurePolicy::LocalShare { replicas: 2 });
    for l in [&closed, &open, &share] {
        bounded(l.try_acquire(10)).await.unwrap(); // Redis's bucket: now empty
        assert!(matches!(
            bounded(l.try_acquire(1)).await,
            Err(TryAcquireError::NotUntil { .. })
        ));
    }

    // The first call of all loaded the script.
    let loads_before: u64 = [&closed, &open, &share]
        .iter()
        .map(|l| l.metrics().script_loads)
        .sum();
    assert_eq!(loads_before, 1);
    server.kill();

    for _ in 0..3 {
        match bounded(closed.try_acquire(1)).await {
            Err(TryAcquireError::Unavailable { cause }) => {
                assert!(matches!(
                    cause,
                    RedisErrorKind::Connection | RedisErrorKind::Timeout
                ));
            }
            other => panic!("fail closed must refuse, got {other:?}"),
        }
    }
    for _ in 0..20 {
        bounded(open.try_acquire(1)).await.unwrap();
    }
    // The local share: 60/min with burst 10 over 2 replicas is 30/min with
    // burst 5: exactly 5 now, then a refusal a share interval (2 s) away.
    let mut admitted = 0;
    for _ in 0..8 {
        match bounded(share.try_acquire(1)).await {
            Ok(()) => admitted += 1,
            Err(TryAcquireError::NotUntil { .. }) => {}
            Err(e) => panic!("the local share must not fail: {e}"),
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(share.fallback_quota().unwrap().burst(), 5);
    for l in [&closed, &open, &share] {
        let m = l.metrics();
        assert!(
            !m.redis_healthy && m.redis_errors >= 1 && m.fallbacks >= 3,
            "{m:?}"
        );
    }

    server.restart().unwrap();

    // Probes find Redis again within a few probe intervals. The restarted
    // server forgot the bucket (no persistence) and the script.
    for l in [&closed, &open, &share] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = l.metrics().fallbacks;
            let r = bounded(l.try_acquire(1)).await;
            if l.metrics().fallbacks == before {
                assert_eq!(r, Ok(()), "Redis is back with a full bucket");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never reconnected: {:?}",
                l.metrics()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(l.metrics().redis_healthy);
    }
    // The first to reconnect found the script gone and sent it again (the
    // server caches it for the others).
    let loads: u64 = [&closed, &open, &share]
        .iter()
        .map(|l| l.metrics().script_loads)
        .sum();
    assert_eq!(loads, loads_before + 1);
}

/// `SCRIPT FLUSH` mid-run: the next call gets NOSCRIPT, sends the script
/// again with EVAL, and is answered; nothing fails.
#[tokio::test]
async fn script_flush_mid_run_reloads_the_script() {
    let Some(server) = own() else { return };
    let url = server.url();
    let limiter =
        RedisRateLimiter::builder(client(&url), "flush", Quota::per_second(1000).unwrap())
            .call_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
    limiter.ping().await.unwrap();
    for _ in 0..5 {
        limiter.try_acquire(1).await.unwrap();
    }
    assert_eq!(limiter.metrics().script_loads, 0);
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw(&url).await)
        .await
        .unwrap();
    for _ in 0..5 {
        limiter.try_acquire(1).await.unwrap();
    }
    let m = limiter.metrics();
    assert_eq!(
        (m.script_loads, m.redis_errors, m.admitted, m.round_trips),
        (1, 0, 10, 10)
    );
}

/// A Redis blocked by `DEBUG SLEEP 2` against a 100 ms call timeout: the
/// call gives up (typed `Timeout`) while the server still sleeps, later calls
/// do not wait at all, and once it wakes a probe puts Redis back in force.
#[tokio::test]
async fn slow_redis_times_out_and_recovers() {
    let Some(server) = own() else { return };
    let url = server.url();
    let limiter = RedisRateLimiter::builder(client(&url), "slow", Quota::per_second(1000).unwrap())
        .call_timeout(Duration::from_millis(100))
        .probe_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    limiter.try_acquire(1).await.unwrap();
    let sleeper_url = url.clone();
    let sleeper = tokio::spawn(async move {
        let () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(2)
            .query_async(&mut raw(&sleeper_url).await)
            .await
            .unwrap();
    });
    // Let the DEBUG SLEEP reach the server first.
    let mut probe = raw(&url).await;
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        redis::cmd("PING").query_async::<String>(&mut probe),
    )
    .await;
    let r = bounded(limiter.try_acquire(1)).await;
    assert_eq!(
        r,
        Err(TryAcquireError::Unavailable {
            cause: RedisErrorKind::Timeout
        })
    );
    assert!(
        !sleeper.is_finished(),
        "the call must give up while Redis still sleeps"
    );
    let r = bounded(limiter.try_acquire(1)).await; // known down: answered at once
    assert_eq!(
        r,
        Err(TryAcquireError::Unavailable {
            cause: RedisErrorKind::Timeout
        })
    );
    let m = limiter.metrics();
    assert_eq!((m.timeouts, m.fallbacks), (1, 2));
    assert!(!sleeper.is_finished());
    sleeper.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bounded(limiter.try_acquire(1)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            limiter.metrics()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limiter.metrics().redis_healthy);
}

/// Clones share the reservation and the metrics.
#[tokio::test]
async fn clones_share_metrics_and_reservation() {
    let Some(target) = shared() else { return };
    let k = key("clones");
    let limiter = RedisRateLimiter::builder(
        client(&target.url),
        k.as_str(),
        Quota::per_second(100).unwrap(),
    )
    .local_reservation(4, Duration::from_secs(5))
    .call_timeout(Duration::from_secs(2))
    .build()
    .unwrap();
    let clone = limiter.clone();
    limiter.try_acquire(1).await.unwrap(); // one round trip takes 4
    assert_eq!(clone.reserved(), 3);
    for _ in 0..3 {
        clone.try_acquire(1).await.unwrap();
    }
    let m = limiter.metrics();
    assert_eq!((m.round_trips, m.reservation_hits, m.admitted), (1, 3, 4));
}

// ------------------------------------ the shell on MemoryStore, paused clock

mod memory {
    use std::time::Duration;

    use flowguard::ConfigErrorKind;
    use flowguard::rate::{
        AcquireError, FailurePolicy, KeyedRedisRateLimiter, MemoryStore, Quota, RedisClient,
        RedisErrorKind, RedisRateLimiter, TryAcquireError,
    };
    use tokio::time::Instant;

    fn q(n: u32) -> Quota {
        Quota::per_second(n).unwrap()
    }

    /// A slow store against the call timeout: the call gives up at exactly
    /// the timeout, later calls do not ask until the probe interval has
    /// passed, and the probe puts Redis back in force.
    #[tokio::test(start_paused = true)]
    async fn call_timeout_then_probes_until_redis_answers() {
        let store = MemoryStore::new();
        let limiter = RedisRateLimiter::builder_in_memory(&store, "k", q(10))
            .call_timeout(Duration::from_millis(100))
            .probe_interval(Duration::from_secs(1))
            .build()
            .unwrap();
        store.set_latency(Duration::from_millis(200));
        let start = Instant::now();
        let unavailable = Err(TryAcquireError::Unavailable {
            cause: RedisErrorKind::Timeout,
        });
        assert_eq!(limiter.try_acquire(1).await, unavailable);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(limiter.try_acquire(1).await, unavailable); // not asked
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(store.calls(), 1);
        store.set_latency(Duration::ZERO);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(limiter.try_acquire(1).await, unavailable); // 1 ms short: not asked
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limiter.try_acquire(1).await, Ok(())); // the probe
        let m = limiter.metrics();
        assert_eq!(
            (
                m.round_trips,
                m.redis_errors,
                m.timeouts,
                m.fallbacks,
                m.redis_healthy
            ),
            (2, 1, 1, 3, true)
        );
        assert_eq!(store.calls(), 2);
    }

    /// A check dropped mid round trip gives its borrowed reservation tokens
    /// back; the store may still have counted the round trip's tokens.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_check_gives_borrowed_tokens_back() {
        let store = MemoryStore::new();
        let limiter = RedisRateLimiter::builder_in_memory(&store, "k", q(10))
            .local_reservation(4, Duration::from_secs(10))
            .call_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        limiter.try_acquire(1).await.unwrap();
        assert_eq!(limiter.reserved(), 3);
        store.set_latency(Duration::from_secs(1));
        // 4 > 3 held: borrows the 3 and asks the store for 1 more.
        let r = tokio::time::timeout(Duration::from_millis(10), limiter.try_acquire(4)).await;
        assert!(r.is_err(), "the check was cancelled");
        assert_eq!(limiter.reserved(), 3);
        let m = limiter.metrics();
        assert_eq!((m.calls, m.admitted, m.refused), (2, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_shared_bucket_with_bounded_jitter() {
        let store = MemoryStore::new();
        let quota = Quota::per_second(10).unwrap().with_burst(1).unwrap();
        let a = RedisRateLimiter::builder_in_memory(&store, "k", quota)
            .build()
            .unwrap();
        let b = RedisRateLimiter::builder_in_memory(&store, "k", quota)
            .build()
            .unwrap();
        a.try_acquire(1).await.unwrap();
        let start = Instant::now();
        b.acquire(1).await.unwrap();
        let waited = start.elapsed();
        // The next token is 100 ms away; the jitter adds at most one interval.
        assert!(
            waited >= Duration::from_millis(100) && waited <= Duration::from_millis(201),
            "{waited:?}"
        );
        assert!(matches!(
            a.acquire(2).await,
            Err(AcquireError::InsufficientCapacity {
                requested: 2,
                burst: 1
            })
        ));
        let err = a
            .acquire_timeout(1, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, AcquireError::Timeout { .. }));
        store.set_fault(Some(RedisErrorKind::Connection));
        assert_eq!(
            a.acquire(1).await,
            Err(AcquireError::Unavailable {
                cause: RedisErrorKind::Connection
            })
        );
    }

    /// Go's `Wait` with a deadline never returns after it. The random delay
    /// added to each wait (up to one emission interval, here a minute) must
    /// not carry a wait past the caller's timeout.
    #[tokio::test(start_paused = true)]
    async fn acquire_timeout_never_waits_past_its_deadline() {
        let store = MemoryStore::new();
        let limiter =
            RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_minute(1).unwrap())
                .build()
                .unwrap();
        limiter.try_acquire(1).await.unwrap();
        // The next token comes exactly at the deadline: taken then.
        let start = Instant::now();
        limiter
            .acquire_timeout(1, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        // 60 s away, a 70 s timeout: taken within it, jitter or not.
        let start = Instant::now();
        limiter
            .acquire_timeout(1, Duration::from_secs(70))
            .await
            .unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited <= Duration::from_secs(70),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_local_share_limits_each_key_while_down() {
        let store = MemoryStore::new();
        let limiter: KeyedRedisRateLimiter<u32> = RedisRateLimiter::builder_in_memory(
            &store,
            "tenants",
            Quota::per_minute(60).unwrap().with_burst(6).unwrap(),
        )
        .failure_policy(FailurePolicy::LocalShare { replicas: 3 })
        .build_keyed()
        .unwrap();
        limiter.try_acquire(&1, 6).await.unwrap();
        store.set_fault(Some(RedisErrorKind::Connection));
        for key in [1, 2] {
            // Each key: burst 6 / 3 replicas = 2 locally.
            assert_eq!(limiter.try_acquire(&key, 2).await, Ok(()));
            assert!(matches!(
                limiter.try_acquire(&key, 1).await,
                Err(TryAcquireError::NotUntil { .. })
            ));
            assert!(matches!(
                limiter.try_acquire(&key, 3).await,
                Err(TryAcquireError::Unavailable { .. })
            ));
        }
        store.set_fault(None);
        tokio::time::advance(flowguard::rate::DEFAULT_PROBE_INTERVAL).await;
        // Redis is back: key 1's shared bucket is still empty.
        assert!(matches!(
            limiter.try_acquire(&1, 1).await,
            Err(TryAcquireError::NotUntil { .. })
        ));
        assert!(limiter.metrics().redis_healthy);
    }

    #[tokio::test]
    async fn builder_names_the_bad_field() {
        let store = MemoryStore::new();
        let b = |quota: Quota| RedisRateLimiter::builder_in_memory(&store, "k", quota);
        let huge = Quota::with_period(1, Duration::from_secs(60 * 86_400)).unwrap();
        let e = b(huge).build().unwrap_err();
        assert_eq!((e.field(), e.kind()), ("quota", ConfigErrorKind::TooLarge));
        let e = RedisRateLimiter::builder_in_memory(&store, "", q(1))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "key");
        assert_eq!(
            b(q(1))
                .call_timeout(Duration::ZERO)
                .build()
                .unwrap_err()
                .field(),
            "call_timeout"
        );
        assert_eq!(
            b(q(1))
                .probe_interval(Duration::ZERO)
                .build()
                .unwrap_err()
                .field(),
            "probe_interval"
        );
        let e = b(q(5))
            .local_reservation(0, Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(
            (e.field(), e.kind()),
            ("local_reservation", ConfigErrorKind::Zero)
        );
        let e = b(q(5))
            .local_reservation(6, Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(
            (e.field(), e.kind()),
            ("local_reservation", ConfigErrorKind::TooLarge)
        );
        let e = b(q(5))
            .failure_policy(FailurePolicy::LocalShare { replicas: 0 })
            .build()
            .unwrap_err();
        assert_eq!((e.field(), e.kind()), ("replicas", ConfigErrorKind::Zero));
        let e = b(Quota::with_period(1, Duration::from_secs(40 * 86_400)).unwrap())
            .failure_policy(FailurePolicy::LocalShare { replicas: u32::MAX })
            .build()
            .unwrap_err();
        assert_eq!(
            (e.field(), e.kind()),
            ("replicas", ConfigErrorKind::TooLarge)
        );
        let e = b(q(5))
            .local_reservation(2, Duration::from_secs(1))
            .build_keyed::<str>()
            .unwrap_err();
        assert_eq!(
            (e.field(), e.kind()),
            ("local_reservation", ConfigErrorKind::Conflict)
        );
    }

    #[test]
    fn a_redis_client_outside_a_runtime_is_a_config_error() {
        let client = RedisClient::open("redis://127.0.0.1:1/").unwrap();
        let e = RedisRateLimiter::builder(client, "k", q(1))
            .build()
            .unwrap_err();
        assert_eq!((e.field(), e.kind()), ("runtime", ConfigErrorKind::Missing));
    }

    #[test]
    fn handles_and_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let store = MemoryStore::new();
        let l = RedisRateLimiter::builder_in_memory(&store, "k", q(1))
            .build()
            .unwrap();
        let k: KeyedRedisRateLimiter<str> = RedisRateLimiter::builder_in_memory(&store, "k", q(1))
            .build_keyed()
            .unwrap();
        send_sync(&l);
        send_sync(&k);
        send_sync(&store);
        send(&l.try_acquire(1));
        send(&l.acquire(1));
        send(&l.acquire_timeout(1, Duration::from_secs(1)));
        send(&l.ping());
        send(&k.try_acquire("a", 1));
        send(&k.acquire("a", 1));
    }
}
