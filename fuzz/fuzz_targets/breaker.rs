#![no_main]
#[path = "../../tests/model/breaker.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((cfg, ops)) = model::cfg_and_ops_from_bytes(data) {
        model::check(&cfg, &ops);
    }
});
