#![no_main]
#[path = "../../tests/model/histogram.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (pairs, qs) = model::pairs_from_bytes(data);
    model::check_weighted(&pairs, &qs);
});
