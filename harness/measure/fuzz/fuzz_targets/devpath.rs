#![no_main]
//! Device path decoding; what decodes must re-encode to the same bytes and render as text.

use libfuzzer_sys::fuzz_target;
use measure::devpath::DevicePath;

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = DevicePath::decode(data) {
        let _ = path.to_string();
        if let Ok(again) = path.encode() {
            assert_eq!(again, data);
        }
    }
});
