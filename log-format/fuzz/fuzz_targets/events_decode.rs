//! Any bytes as a record payload: `events::decode` never panics, and what it
//! decodes survives `encode` then `decode` unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    log_format_fuzz::check_events_decode(data);
});
