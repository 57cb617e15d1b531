#![no_main]
#[path = "../../tests/model/pipeline.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (config, answers, calls) = model::from_bytes(data);
    model::check(config, &answers, &calls);
});
