#![no_main]
#[path = "../../tests/model/adaptive.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (case, ops) = model::AlgoCase::from_bytes(data);
    model::check_algorithm(case, &ops);
    model::check_limiter(data.first().copied().unwrap_or(0), &model::limiter_ops_from_bytes(data));
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    model::check_limiter_strided(byte(1), byte(0), &model::limiter_ops_from_bytes(data));
});
