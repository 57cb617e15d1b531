#![no_main]
#[path = "../../tests/model/rate.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| model::check_per_service(&model::svc_ops_from_bytes(data)));
