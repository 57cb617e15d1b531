#![no_main]
#[path = "../../tests/model/semaphore.rs"]
mod model;

use flowguard::semaphore::QueueOrder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&head, rest)) = data.split_first() {
        // Low bits: capacity; bit 7: newest-first; bits 4-5: queue limit.
        let order = if head & 0x80 != 0 { QueueOrder::NewestFirst } else { QueueOrder::OldestFirst };
        let limit = match (head >> 4) & 3 {
            0 => None,
            k => Some(usize::from(k) - 1),
        };
        model::check_with(head as usize % 9, order, limit, &model::ops_from_bytes(rest));
    }
});
