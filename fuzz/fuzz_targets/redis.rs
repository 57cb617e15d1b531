#![no_main]
#[path = "../../tests/model/redis.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (cfg, ops) = model::case_from_bytes(data);
    model::check(cfg, &ops);
});
