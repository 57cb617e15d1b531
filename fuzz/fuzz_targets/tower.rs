#![no_main]
#[path = "../../tests/model/tower.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| model::check(&model::Case::from_bytes(data)));
