//! The admin endpoint's request-line parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = overlayd::admin::parse_request(data);
});
