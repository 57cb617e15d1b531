//! Property tests: the debounce core equals lodash's algorithm (see
//! `tests/model/timing.rs`) for random options, call times and values; and
//! so does the stream adapter, driven on the paused clock.

#[path = "model/timing.rs"]
mod model;

use std::time::Duration;

use flowguard::timing::{DebounceOptions, TimingStreamExt};
use futures::StreamExt;
use model::Op;
use proptest::prelude::*;
use tokio::time::Instant;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..64, proptest::option::of(0u8..128), any::<bool>(), any::<bool>()).prop_map(
            |(wait, max_wait, leading, trailing)| Op::Options { wait, max_wait, leading, trailing }
        ),
        6 => (0u8..80).prop_map(Op::Advance),
        2 => Just(Op::Tick),
        8 => any::<u8>().prop_map(Op::Call),
        1 => Just(Op::Flush),
        1 => Just(Op::Cancel),
    ]
}

fn scenario() -> impl Strategy<Value = Vec<Op>> {
    // Options first, so most scenarios use non-default ones.
    (op(), proptest::collection::vec(op(), 0..200)).prop_map(|(first, mut rest)| {
        if let Op::Options { .. } = first {
            rest.insert(0, first);
        }
        rest
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn core_matches_lodash(ops in scenario()) {
        model::check(&ops);
    }
}

type Options = (u8, Option<u8>, bool, bool);

/// Items (gap in ms since the previous one, value), few distinct gaps so
/// that items often share an instant with each other and with timers.
fn items() -> impl Strategy<Value = Vec<(u64, u8)>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(0u64), 1u64..4, Just(10), Just(20)],
            any::<u8>(),
        ),
        0..24,
    )
}

/// Runs the adapter over items at the given gaps, the input ending `tail`
/// ms after the last item; returns `(ms, item)` as the consumer saw them.
fn run_stream(options: Options, items: &[(u64, u8)], tail: u64) -> Option<Vec<(u64, u8)>> {
    let (wait, max_wait, leading, trailing) = options;
    let mut b = DebounceOptions::builder(Duration::from_millis(u64::from(wait)))
        .leading(leading)
        .trailing(trailing);
    if let Some(m) = max_wait {
        b = b.max_wait(Duration::from_millis(u64::from(m)));
    }
    let opts = b.build().ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let items = items.to_vec();
    Some(rt.block_on(async move {
        let start = Instant::now();
        let mut at = 0;
        let mut timed: Vec<(u64, Option<u8>)> = items
            .iter()
            .map(|&(gap, v)| {
                at += gap;
                (at, Some(v))
            })
            .collect();
        timed.push((at + tail, None));
        // Polled by the adapter itself: an item due at an instant is ready
        // when the adapter looks, whatever else fires then.
        let inner = futures::stream::iter(timed)
            .then(move |(at, v)| async move {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                v
            })
            .take_while(|v| std::future::ready(v.is_some()))
            .filter_map(std::future::ready);
        inner
            .debounce_with(opts)
            .map(|v| (start.elapsed().as_millis() as u64, v))
            .collect()
            .await
    }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stream_matches_lodash(
        options in (0u8..16, proptest::option::of(0u8..32), any::<bool>(), any::<bool>()),
        items in items(),
        tail in prop_oneof![Just(0u64), 1u64..40],
    ) {
        let Some(got) = run_stream(options, &items, tail) else {
            return Ok(()); // both edges off: refused by the builder
        };
        let mut at = 0;
        let calls: Vec<(u64, u8)> = items.iter().map(|&(gap, v)| { at += gap; (at, v) }).collect();
        prop_assert_eq!(got, model::lodash_stream(options, &calls, at + tail));
    }
}

#[test]
fn stream_wait_zero_matches_lodash() {
    let calls = [(0, 1), (0, 2), (0, 3), (5, 4)];
    let items = [(0, 1), (0, 2), (0, 3), (5, 4)];
    let options = (0, None, false, true);
    let want = model::lodash_stream(options, &calls, 10);
    assert_eq!(want, [(0, 3), (5, 4)]);
    assert_eq!(run_stream(options, &items, 5), Some(want));
}

#[test]
fn throttle_burst_matches_lodash() {
    let mut ops = vec![Op::Options {
        wait: 10,
        max_wait: Some(10),
        leading: true,
        trailing: true,
    }];
    for i in 0..100 {
        ops.push(Op::Call(i));
        ops.push(Op::Advance(3));
    }
    ops.push(Op::Advance(50));
    model::check(&ops);
}

#[test]
fn decoded_bytes_are_checked() {
    let bytes: Vec<u8> = (0..=255u8).flat_map(|b| [b, b.wrapping_mul(7)]).collect();
    model::check(&model::ops_from_bytes(&bytes));
}
