#![no_main]
//! PE parsing, Authenticode ranges and the embedded-signature DER walk must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = measure::pe::PeImage::parse(data) {
        let _ = image.authenticode_ranges();
        let _ = image.signed_digests();
    }
    let _ = measure::pe::ImageLoadEvent::decode(data);
});
