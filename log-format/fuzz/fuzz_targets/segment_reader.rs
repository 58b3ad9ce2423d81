//! Any bytes as a segment file: `scan_dir` and `read_frame` hold their
//! invariants. See `log_format_fuzz::check_segment` for the input layout.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    log_format_fuzz::check_segment(data);
});
