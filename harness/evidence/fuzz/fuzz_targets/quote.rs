//! TDX quotes v4/v5.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = evidence::quote::parse(data) {
        let _ = q.to_json();
    }
});
