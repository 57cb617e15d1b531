#![no_main]
#[path = "../../tests/model/fanout.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| model::check(&model::ops_from_bytes(data)));
