#![no_main]
#[path = "../../tests/model/channel.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| model::check(&model::ops_from_bytes(data)));
