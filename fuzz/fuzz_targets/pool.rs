#![no_main]
#[path = "../../tests/model/pool.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let [k, q, rest @ ..] = data {
        model::check(1 + *k as usize % 4, *q as usize % 5, &model::ops_from_bytes(rest));
    }
});
