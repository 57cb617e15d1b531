#![no_main]
#[path = "../../tests/model/retry.rs"]
mod model;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    model::check_schedule(model::ScheduleCase::from_bytes(data));
    model::check_budget(250, 2, 500, &model::budget_ops_from_bytes(data));
});
