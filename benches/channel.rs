//! flowguard's bounded channel against its peers, in the same criterion
//! groups: SPSC, MPSC (4 producers), MPMC (4 x 4) at capacity 1024, and a
//! capacity-1 ping-pong, all on a 2-worker Tokio runtime.
//!
//! `tokio::sync::mpsc` has a single receiver, so it is absent from MPMC.
//! Message counts are scaled down from the 1M to keep a run short
//! on a shared 2-core machine; the report is per message (throughput).

// Receivers of some peers need `&mut` to receive, others do not.
#![allow(unused_mut)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MSGS: u64 = 100_000;
const PING_PONGS: u64 = 10_000;
const CAP: usize = 1024;
const PRODUCERS: u64 = 4;
const CONSUMERS: u64 = 4;

/// Generates `spsc`, `mpsc` and `ping_pong` for one channel implementation,
/// given how to make one, send on a `&sender`, and receive (as an `Option`)
/// from a `&mut receiver`.
macro_rules! peer {
    ($m:ident, make: |$cap:ident| $make:expr, send: |$tx:ident, $v:ident| $send:expr,
     recv: |$rx:ident| $recv:expr) => {
        mod $m {
            use super::*;

            pub(crate) async fn spsc(n: u64) {
                let $cap = CAP;
                let (tx, mut rx) = $make;
                let p = tokio::spawn(async move {
                    for i in 0..n {
                        let $tx = &tx;
                        let $v = i;
                        $send;
                    }
                });
                let mut got = 0;
                loop {
                    let $rx = &mut rx;
                    match $recv {
                        Some(v) => {
                            black_box(v);
                            got += 1;
                        }
                        None => break,
                    }
                }
                assert_eq!(got, n);
                p.await.unwrap();
            }

            pub(crate) async fn mpsc(n: u64) {
                let $cap = CAP;
                let (tx, mut rx) = $make;
                let mut ps = Vec::new();
                for _ in 0..PRODUCERS {
                    let tx = tx.clone();
                    ps.push(tokio::spawn(async move {
                        for i in 0..n / PRODUCERS {
                            let $tx = &tx;
                            let $v = i;
                            $send;
                        }
                    }));
                }
                drop(tx);
                let mut got = 0;
                loop {
                    let $rx = &mut rx;
                    match $recv {
                        Some(v) => {
                            black_box(v);
                            got += 1;
                        }
                        None => break,
                    }
                }
                assert_eq!(got, n / PRODUCERS * PRODUCERS);
                for p in ps {
                    p.await.unwrap();
                }
            }

            pub(crate) async fn ping_pong(n: u64) {
                let $cap = 1;
                let (ping_tx, mut ping_rx) = $make;
                let (pong_tx, mut pong_rx) = $make;
                let echo = tokio::spawn(async move {
                    loop {
                        let got = {
                            let $rx = &mut ping_rx;
                            $recv
                        };
                        match got {
                            Some(v) => {
                                let $tx = &pong_tx;
                                let $v = v;
                                $send;
                            }
                            None => break,
                        }
                    }
                });
                for i in 0..n {
                    {
                        let $tx = &ping_tx;
                        let $v = i;
                        $send;
                    }
                    let $rx = &mut pong_rx;
                    assert_eq!($recv, Some(i));
                }
                drop(ping_tx);
                echo.await.unwrap();
            }
        }
    };
}

/// Generates `mpmc` for a multi-consumer implementation.
macro_rules! mpmc {
    ($m:ident, make: |$cap:ident| $make:expr, send: |$tx:ident, $v:ident| $send:expr,
     recv: |$rx:ident| $recv:expr) => {
        mod $m {
            use super::*;

            pub(crate) async fn mpmc(n: u64) {
                let $cap = CAP;
                let (tx, rx) = $make;
                let mut ps = Vec::new();
                for _ in 0..PRODUCERS {
                    let tx = tx.clone();
                    ps.push(tokio::spawn(async move {
                        for i in 0..n / PRODUCERS {
                            let $tx = &tx;
                            let $v = i;
                            $send;
                        }
                    }));
                }
                drop(tx);
                let mut cs = Vec::new();
                for _ in 0..CONSUMERS {
                    #[allow(unused_mut)]
                    let mut rx = rx.clone();
                    cs.push(tokio::spawn(async move {
                        let mut got = 0u64;
                        loop {
                            let $rx = &mut rx;
                            match $recv {
                                Some(v) => {
                                    black_box(v);
                                    got += 1;
                                }
                                None => break,
                            }
                        }
                        got
                    }));
                }
                drop(rx);
                let mut got = 0;
                for c in cs {
                    got += c.await.unwrap();
                }
                assert_eq!(got, n / PRODUCERS * PRODUCERS);
                for p in ps {
                    p.await.unwrap();
                }
            }
        }
    };
}

peer!(fg, make: |cap| flowguard::channel::bounded::<u64>(cap).unwrap(),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await);
peer!(tk, make: |cap| tokio::sync::mpsc::channel::<u64>(cap),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await);
peer!(ac, make: |cap| async_channel::bounded::<u64>(cap),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await.ok());
peer!(fl, make: |cap| flume::bounded::<u64>(cap),
    send: |tx, v| tx.send_async(v).await.unwrap(), recv: |rx| rx.recv_async().await.ok());
peer!(kn, make: |cap| kanal::bounded_async::<u64>(cap),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await.ok());

mpmc!(fg_mpmc, make: |cap| flowguard::channel::bounded::<u64>(cap).unwrap(),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await);
mpmc!(ac_mpmc, make: |cap| async_channel::bounded::<u64>(cap),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await.ok());
mpmc!(fl_mpmc, make: |cap| flume::bounded::<u64>(cap),
    send: |tx, v| tx.send_async(v).await.unwrap(), recv: |rx| rx.recv_async().await.ok());
mpmc!(kn_mpmc, make: |cap| kanal::bounded_async::<u64>(cap),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await.ok());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();

    macro_rules! group {
        ($name:literal, $n:expr, [$(($label:literal, $f:path)),+ $(,)?]) => {{
            let mut g = c.benchmark_group($name);
            g.throughput(Throughput::Elements($n));
            g.sample_size(10);
            $( g.bench_function($label, |b| b.to_async(&rt).iter(|| $f($n))); )+
            g.finish();
        }};
    }

    group!(
        "channel_spsc",
        MSGS,
        [
            ("flowguard", fg::spsc),
            ("tokio_mpsc", tk::spsc),
            ("async_channel", ac::spsc),
            ("flume", fl::spsc),
            ("kanal", kn::spsc),
        ]
    );
    group!(
        "channel_mpsc_4p",
        MSGS,
        [
            ("flowguard", fg::mpsc),
            ("tokio_mpsc", tk::mpsc),
            ("async_channel", ac::mpsc),
            ("flume", fl::mpsc),
            ("kanal", kn::mpsc),
        ]
    );
    group!(
        "channel_mpmc_4x4",
        MSGS,
        [
            ("flowguard", fg_mpmc::mpmc),
            ("async_channel", ac_mpmc::mpmc),
            ("flume", fl_mpmc::mpmc),
            ("kanal", kn_mpmc::mpmc),
        ]
    );
    group!(
        "channel_ping_pong_cap1",
        PING_PONGS,
        [
            ("flowguard", fg::ping_pong),
            ("tokio_mpsc", tk::ping_pong),
            ("async_channel", ac::ping_pong),
            ("flume", fl::ping_pong),
            ("kanal", kn::ping_pong),
        ]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
