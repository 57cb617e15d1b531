#![no_main]
#[path = "../../tests/model/histogram.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (values, qs) = model::from_bytes(data);
    model::check(&values, &qs);
});
