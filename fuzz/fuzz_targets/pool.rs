#![no_main]
#[path = "../../tests/model/pool.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let [k, q, rest @ ..] = data {
        let aging = (*q >= 128).then_some(1 + (*q as usize >> 5) % 3);
        model::check(1 + *k as usize % 4, *q as usize % 7, aging, &model::ops_from_bytes(rest));
    }
});
