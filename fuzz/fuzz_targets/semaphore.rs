#![no_main]
#[path = "../../tests/model/semaphore.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&cap, rest)) = data.split_first() {
        model::check(cap as usize % 9, &model::ops_from_bytes(rest));
    }
});
