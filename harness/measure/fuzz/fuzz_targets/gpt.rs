#![no_main]
//! GPT from a disk image (512- and 4096-byte sectors) and UEFI_GPT_DATA decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = measure::gpt::GptData::from_disk(data, 512);
    let _ = measure::gpt::GptData::from_disk(data, 4096);
    if let Ok(gpt) = measure::gpt::GptData::decode(data) {
        assert_eq!(gpt.encode(), data);
    }
});
