#![no_main]
//! EFI_LOAD_OPTION and UEFI_VARIABLE_DATA decoding must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(option) = measure::devpath::LoadOption::decode(data) {
        let _ = option.to_string();
        let _ = option.encode();
    }
    let _ = measure::uefi::VariableData::parse(data);
});
